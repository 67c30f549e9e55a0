"""The read side: what `hpo list/status/best/trials/export/report/dashboard` show, read back from
the store. Imports nothing of the run side."""
