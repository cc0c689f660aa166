"""One ComponentResource per concern; each is small, typed, and parents its children."""
