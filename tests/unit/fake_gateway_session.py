"""Runs a test scenario against a FakeGateway started on a loopback port."""

import asyncio

import aiohttp

from connectors.fake_gateway import FakeGateway


def run_with_fake(scenario, *, token, **fake_options):
    """`scenario(fake, base_url, session)` with a started fake gateway; its result."""

    async def main():
        fake = FakeGateway(token, **fake_options)
        base_url = await fake.start()
        try:
            async with aiohttp.ClientSession() as session:
                return await scenario(fake, base_url, session)
        finally:
            await fake.stop()

    return asyncio.run(main())
