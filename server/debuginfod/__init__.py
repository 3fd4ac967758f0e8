"""The debuginfod protocol over the all-versions repository.

- :mod:`.settings`: the ``debuginfod:`` section of the configuration.
- :mod:`.artifacts`: finds a build-id's file through the repository index, unpacks it
  from its RPM once into a size-capped cache, and answers later requests from there.
- :mod:`.views`: the blueprint (``/buildid/<hex>/debuginfo|executable|source|section``),
  registered by the main app factory and by :func:`.views.create_debuginfod_app`, the
  app of the separate ``retracer debuginfod`` command.
"""
