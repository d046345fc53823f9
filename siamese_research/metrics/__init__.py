"""Numbers: what a pair's score and label give (`pairs`: accuracy at the one
threshold rule, F1, ROC AUC, average precision, Pearson, Spearman, from
scikit-learn and SciPy), MAP and MRR per group (`ranking`, this project's
own), the lexical baseline (`overlap`), and the Keras metrics the compiled
steps update (`streaming`)."""
