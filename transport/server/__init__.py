"""The server side: an ``Endpoint`` serves many machines to many clients on one ROUTER socket.

One I/O thread (``loop``) owns the socket. Requests are handled in arrival order (``dispatch``) within client
``sessions``; changes made on the server side are noticed through a tracer on each served machine and pushed to
every subscribed client as clock diffs (``pushes``), coalesced while the thread is busy, in order with the
replies (one pipe per client). ``endpoint`` holds the public ``Endpoint``.
"""

from .endpoint import Endpoint

__all__ = ["Endpoint"]
