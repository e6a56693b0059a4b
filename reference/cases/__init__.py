"""Registry cases, one module per layer family; each module defines ``CASES``."""
