"""persistence package."""

__all__: list[str] = []
