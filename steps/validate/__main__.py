from steps.validate.validate import app

app()
