"""What the tests and the bench share: the Slack Web API stand-in (a real local HTTP server)
and the environment of a ``jitgate serve`` built from the test fixtures.

Kept out of ``tests/`` so that ``bench/`` imports no test code, and out of ``broker/`` and
``bot/`` so that none of it ships: the wheel holds only ``broker*`` and ``bot*``
(``[tool.setuptools.packages.find]`` in pyproject.toml), and
``tests/packaging`` checks what the wheel holds.
"""
