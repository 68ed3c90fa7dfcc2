"""Host tools for the offline payment terminal: serial link, termctl CLI, emulator launcher."""

__version__ = "0.1.0"
