"""Break-glass grants awaiting the security group's review.

Each break-glass grant opens a review that the security group must acknowledge before
its deadline (``broker.breakglass``); the console lists the open ones and lets a member
of the security group acknowledge them with a comment. Everyone signed in sees the list:
a bypassed approval is everybody's business.
"""

from __future__ import annotations

from broker.model import Request

MAX_REVIEWS = 50


def available(ctx) -> bool:
    """True when this broker records break-glass reviews."""
    return getattr(ctx, "breakglass", None) is not None


async def breakglass_reviews(ctx, approver) -> list[Request]:
    """Break-glass requests whose review is still open, oldest deadline first (bounded)."""
    if not available(ctx):
        return []
    return await ctx.breakglass.pending_reviews(limit=MAX_REVIEWS)
