"""The HTTP side of retracer: the ABRT retrace protocol, the task store and the queue.

``retracer.server.app.create_app(config)`` builds the Flask application;
``retracer serve`` runs it on gevent and ``retracer worker`` consumes the queue.
"""
