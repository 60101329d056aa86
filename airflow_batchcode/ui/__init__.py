"""The provider's pages inside the Airflow UI (an Airflow 3 plugin).

- :mod:`.plugin`: the ``AirflowPlugin`` (FastAPI app + external views) the provider info registers;
- :mod:`.app`: routes and access checks (Airflow's auth manager);
- :mod:`.store`: which table a DAG writes (its outlet Asset) and a DB-API connection to it;
- :mod:`.queries`: the report, history and review-queue SQL; :mod:`.runs`: XCom and task times;
- :mod:`.reviews`: decisions in ``<output_table>_reviews``, applied on load, ``<output_table>_latest``;
- :mod:`.codes`: a reviewer's code, checked for its form and labelled;
- :mod:`.charts`: server-side SVG; :mod:`.pages`: HTML.
"""
