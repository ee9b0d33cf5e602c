"""``ovlift view``: a scene in the browser, coloured by RGB, class or a typed text.

``scene_data`` reads what is shown from the store, ``session`` holds one page's choices and
checks everything the page sends (neither imports viser, so both are tested without a
browser), ``server`` is the live viser app and ``static_html`` the one-file export.
"""
