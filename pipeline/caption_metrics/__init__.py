"""Caption quality measured the way captioning research reports it, per photo and per captioner.

* ``tokenize``: PTB tokenisation as the COCO evaluation does it (Stanford's jar when Java is present, the
  same rules in Python otherwise);
* ``coco``: BLEU-1..4, ROUGE-L, CIDEr-D from pycocoevalcap; ``meteor``: METEOR 1.5 (needs Java);
  ``spice``: SPICE where its models are installed;
* ``clipscore``: CLIPScore and RefCLIPScore with the configured open_clip model;
* ``copying``: copy rate and prompt n-gram overlap (does a captioner copy the captions it was shown?);
* ``stats``: bootstrap intervals, the paired test, Spearman's rho;
* ``scoring``: rows (captioners and the ``human`` baseline) photo by photo, and their summary;
* ``storage``: where rows and summaries live in the store; ``java``: the Java child processes.

The stage that runs them is ``pipeline.stages.caption_metrics``.
"""
