"""The live app: a web page that streams a video while it is generated and takes prompts on the fly (app.py)."""
