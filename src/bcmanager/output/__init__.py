"""Basecalled output as Dorado and MinKNOW users expect it.

One module per concept, all pure (files in, files out; no HTTP, threads or clock):

- `naming`: MinKNOW's run folders, `{bam,fastq}_{pass,fail}/<barcode>/` and file names.
- `origin`: which run (flow cell, protocol run, acquisition, sample) a pod5 belongs to.
- `records`: reading a basecaller's BAM or FASTQ output as read records with tags.
- `summary`: the sequencing summary's columns and rows.
- `split`: a job's basecaller output split by run, pass/fail and barcode, with its
  summary rows, into a tree shaped like the final OUTPUT tree.
"""
