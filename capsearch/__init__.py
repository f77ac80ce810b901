"""capsearch: search a photo collection by text with captions written by vision-language models."""
__version__ = "0.1.0"
