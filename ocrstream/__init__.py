"""What a user installs: the ocrstream client SDK."""
from ocrstream.client import OcrstreamClient, OcrstreamError

__all__ = ["OcrstreamClient", "OcrstreamError"]
