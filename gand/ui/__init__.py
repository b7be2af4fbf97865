"""`gand ui`: a live web dashboard over the job service (Starlette on uvicorn).

app.py assembles the routes; api.py is the JSON API and the actions; stream.py the one
server-sent-event stream per page; pages.py the HTML shells; shapes.py checks parameters and
shapes data; server.py binds and runs it. static/ holds every script and style (uPlot
included), so the dashboard works offline. Nothing here imports torch.
"""
