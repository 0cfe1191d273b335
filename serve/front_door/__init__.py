"""The front door: the API's port, held by a small relay deployment apart from the router.

``relay.py`` relays HTTP/1.1 between clients and the router replicas' listeners and sends a request
again when its router replica dies before answering; ``http1.py`` frames the messages;
``deployment.py`` runs the relay as a Ray Serve deployment (``router_config.front_door``).
"""
