from rest_framework.routers import SimpleRouter

from projects.api import views

router = SimpleRouter()
router.register("projects", views.ProjectViewSet, basename="project")
router.register("opportunities", views.OpportunityViewSet, basename="opportunity")
router.register("orders", views.OrderViewSet, basename="order")
router.register("workflow-executions", views.WorkflowExecutionViewSet, basename="workflow-execution")

urlpatterns = router.urls
