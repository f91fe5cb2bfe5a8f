"""`make demo`: the bundled real-face talking sample and the demo run that edits it."""
