"""The FastAPI peer's HTTP layer alone, for bench/http_floor.py --peer: uvicorn (uvloop,
httptools) and FastAPI reading the whole body and answering what an all-stored batch answers,
as http_floor.create_floor_app does under gunicorn and Flask. Not part of the product.
"""

from fastapi import FastAPI, Request, Response

ANSWER = b'{"duplicates":0,"quarantined":0,"received":100,"stored":100}\n'
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/webhook")
async def webhook(request: Request):
    await request.body()
    return Response(ANSWER, 200, media_type="application/json")


@app.get("/readyz")
async def ready():
    return Response(b'{"status":"ready"}\n', 200, media_type="application/json")
