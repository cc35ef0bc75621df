"""The pool: async supervision of the worker processes.

Spawning and the preload template (``launch``, ``process``, ``template``), reading a
worker's pipe (``readers``, its deadlines in ``alarms``), dispatch and the wait queue
(``pool``, ``queue``), one request's hold on one worker (``lease``), a worker's record
(``slot``), timeouts, recycling and shutdown (``pool``, ``supervisor``), and the snapshot
it reports (``stats``). It imports the wire and the kernel, never the front.
"""
