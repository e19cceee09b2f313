"""kafka-python's headers (a list of ``(name, bytes)`` tuples) that also answer ``.get``."""


class Headers(list):
    """A list of ``(name, value)`` pairs in wire order; ``get(name)`` returns the last value
    of ``name`` (case-insensitive), so both the list and the dict idiom work."""

    def get(self, name, default=None):
        wanted = name.lower()
        for key, value in reversed(self):
            if key.lower() == wanted:
                return value
        return default
