"""distributed_rec: distributed discrete-diffusion generative recommendation."""

__version__ = "0.1.0"
