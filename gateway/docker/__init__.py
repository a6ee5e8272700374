"""Everything Docker-shaped, at the front door: the Docker Engine API's routes for
containers, execs, images, volumes, events and the system; the translation of its
request bodies into scow's specs (requests.py); its inspect and list JSON from scow's
records (shapes.py); its multiplexed stream frames (frames.py); and hijacked
connections (hijack.py). Nodes speak scow's own records; only this package speaks
Docker's."""
