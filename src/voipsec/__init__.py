"""voipsec: a secure-by-default VoIP edge."""

__version__ = "0.1.0"
__all__ = ["__version__"]
