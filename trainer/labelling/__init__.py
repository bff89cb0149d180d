"""Labelling a site's frames in the tools people already use (CVAT, Label Studio) and reading the result back.

`crack-train label export` turns a site folder (images/ + crackd's predicted masks) into a task file a labelling
tool imports with the predictions already drawn, so labelling is correcting, not painting from scratch;
`crack-train label import` reads the tool's export back into the site's images/ + masks/, which `crack-train adapt`
trains on. numpy, OpenCV, zipfile and json only: no TensorFlow, so it runs on any bench machine.
"""
