"""Airflow DAGs that call the mocha command line. Nothing of the project is imported at DAG parse time."""
