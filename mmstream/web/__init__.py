"""What mmstream offers a browser: range decisions for playback and the recorder/player page.

Everything here is sans-I/O; the server's HTTP handler moves the bytes.
"""
