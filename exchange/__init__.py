"""exchange package."""

__all__: list[str] = []
