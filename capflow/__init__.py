"""The capflow command line."""

__all__: list[str] = []
