from steps.split.split import app

app()
