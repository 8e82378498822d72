"""The baseline the issue measures us against: django-rq with a JobLog row written at enqueue, start and finish.

What a Django team writes without this app: a model of its own, one row per task created in the submitting
transaction, the rq job enqueued when that transaction commits (django-rq's ``on_db_commit`` mode), and the task
wrapper updating the row when it starts and when it ends. bench.peers runs it as the system ``django-rq``.
"""
