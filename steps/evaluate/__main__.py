from steps.evaluate.evaluate import app

app()
