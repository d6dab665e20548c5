"""Applications built on the library: the command-line tools. Nothing imports them."""
