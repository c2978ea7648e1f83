"""Running things at scale: profiles of notebook parameters (:mod:`.profiles`), the papermill runner behind
``make reproduce`` (:mod:`.reproduce`) and many training runs spread over devices (:mod:`.sweep`)."""
