"""The graph: ``parse → chunk → synthesize → merge`` on a Dask client."""

from .api import convert, expand_inputs
from .graph import BookJob, BookResult, run_jobs, submit_book
from .merge import merge_task
from .options import ConvertOptions, RunOptions
from .report import build_report, dumps_report
from .tasks import parse_task, plan_task, synthesize_task

__all__ = [
    "BookJob",
    "BookResult",
    "ConvertOptions",
    "RunOptions",
    "build_report",
    "convert",
    "dumps_report",
    "expand_inputs",
    "merge_task",
    "parse_task",
    "plan_task",
    "run_jobs",
    "submit_book",
    "synthesize_task",
]
