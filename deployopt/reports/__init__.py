"""What a build leaves for people and CI: the report model and report.md, report.html, JUnit and summaries."""
