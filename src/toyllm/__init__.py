"""toyllm: the three stages that turn random weights into an aligned assistant, on a model small enough for a CPU."""

__version__ = "0.1.0"
