from django.urls import path
from rest_framework.routers import SimpleRouter

from projects.api import views
from projects.api.promises import PromiseViewSet

router = SimpleRouter()
router.register("projects", views.ProjectViewSet, basename="project")
router.register("opportunities", views.OpportunityViewSet, basename="opportunity")
router.register("orders", views.OrderViewSet, basename="order")
router.register("workflow-executions", views.WorkflowExecutionViewSet, basename="workflow-execution")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("areas", views.AreaViewSet, basename="area")
router.register("promises", PromiseViewSet, basename="promise")

# Writes name the execution and the step by their epilot ids, as epilot's own API does.
urlpatterns = [
    path("workflow-executions/<str:execution_id>/steps/<str:step_id>/complete/", views.StepCompleteView.as_view(),
         name="workflow-step-complete"),
    path("workflow-executions/<str:execution_id>/steps/<str:step_id>/", views.StepUpdateView.as_view(), name="workflow-step"),
    path("workflow-executions/<str:execution_id>/close/", views.ExecutionCloseView.as_view(), name="workflow-execution-close"),
    path("funnel/", views.FunnelView.as_view(), name="funnel"),
    path("funnel/milestones/", views.MilestonesView.as_view(), name="funnel-milestones"),
    path("sync/status/", views.SyncStatusView.as_view(), name="sync-status"),
    *router.urls,
]
