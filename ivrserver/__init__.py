"""ivrserver: IVR and CTI integration server for Asterisk."""

__version__ = "0.1.0"
