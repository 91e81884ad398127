"""The step and server images: `engine.py` finds docker or podman, `build.py` builds and tags the
images by content, `registry.py` pushes them (`mlrig images push`)."""
