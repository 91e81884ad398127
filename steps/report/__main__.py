from steps.report.report import app

app()
