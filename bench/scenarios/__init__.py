"""One module per benchmark scenario group; each exposes ``async def run(ctx) -> list[Row]``."""
