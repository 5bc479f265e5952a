"""Pictures of a run: attention maps over a video's frames (`viz.attention`), the confusion matrix and
training curves (`viz.plots`), and the self-contained HTML report that gathers them (`viz.report`)."""
