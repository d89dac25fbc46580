"""A real Redis Sentinel set-up for tests: one master, one replica and three sentinels, each a
``redis-server`` process on a free loopback port in a temporary folder."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from broker.embedded_redis import free_port, redis_server_binary

SERVICE = "jitgate-test"


class SentinelSet:
    def __init__(self, *, appendonly: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jitgate-sentinel-"))
        self.binary = redis_server_binary()
        self.appendonly = appendonly
        self.procs: dict[int, subprocess.Popen] = {}
        self._logs: list = []
        self.data_ports: list[int] = []
        self.sentinel_ports: list[int] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _spawn(self, port: int, *args: str) -> None:
        log = open(self.dir / f"{port}.log", "w")  # closed in stop()
        self._logs.append(log)
        self.procs[port] = subprocess.Popen([self.binary, *args], stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.dir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as r:
                    if r.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {port} did not start: {(self.dir / f'{port}.log').read_text()}")

    def _data_args(self, port: int) -> list[str]:
        folder = self.dir / str(port)
        folder.mkdir(exist_ok=True)
        return ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]

    def start(self) -> "SentinelSet":
        master, replica = free_port(), free_port()
        self.data_ports = [master, replica]
        self._spawn(master, *self._data_args(master))
        self._spawn(replica, *self._data_args(replica), "--replicaof", "127.0.0.1", str(master))
        for _ in range(3):
            port = free_port()
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self._spawn(port, str(conf), "--sentinel")
            self.sentinel_ports.append(port)
        self.wait_for(lambda: self.replica_synced(), "the replica to sync")
        self.wait_for(lambda: all(self._sentinel_sees_replica(p) for p in self.sentinel_ports),
                      "the sentinels to see the replica")
        return self

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinel_ports[0]) as r:
            return int(r.sentinel_get_master_addr_by_name(SERVICE)[1])

    def replica_synced(self) -> bool:
        with redis.Redis(port=self.data_ports[0]) as r:
            info = r.info("replication")
        return info.get("connected_slaves", 0) >= 1 and info.get("slave0", {}).get("state") == "online"

    def _sentinel_sees_replica(self, port: int) -> bool:
        try:
            with redis.Redis(port=port) as r:
                return len(r.sentinel_slaves(SERVICE)) >= 1
        except redis.RedisError:
            return False

    def kill_master(self) -> int:
        """kill -9 of the current master; returns its port."""
        port = self.master_port()
        self.procs[port].kill()
        self.procs[port].wait()
        return port

    def wait_for(self, check, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
