from steps.ingest.ingest import app

app()
