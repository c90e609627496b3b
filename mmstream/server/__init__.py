"""The Trio side of mmstream, and the only code that touches sockets."""
