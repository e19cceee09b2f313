"""A new-style kernel: clustera.Kernel with async def process."""

import asyncio

import clustera


class Shout(clustera.Kernel):
    name = "shout"
    topics = ["words"]

    async def process(self, msg, ctx):
        text = msg.text()
        if not text:
            raise clustera.Skip("empty")
        await asyncio.sleep(0.001)  # an awaited call: other partitions run meanwhile
        ctx.send("shouts", text.upper(), key=msg.key, headers=[("attempt", str(ctx.attempt))])
