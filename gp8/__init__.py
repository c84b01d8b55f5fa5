"""gp8: the open telematics backend for GP8000/GP8500 vehicle boxes."""

__version__ = "0.1.0"
