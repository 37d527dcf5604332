"""accounting package."""

__all__: list[str] = []
