"""Convention rows for peer libraries (aimet, brevitas, tflite, modelopt), registered on import.

Rows are added with ``conventions.register(Convention(...))``; see refquant/conventions.py for the
knobs.
"""
