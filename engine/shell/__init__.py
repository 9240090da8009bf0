"""Reading shell text, shared by ingest and the simulated PVE nodes.

``parse`` reads a script into words, pipelines and lists; ``curl`` reads curl's options. Ingest
uses them to turn a page's commands into steps, the simulation to run ``ssh`` steps, so a
command means the same to both, and a fix to the reading is made once.
"""
