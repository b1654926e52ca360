-- The shared schema starts empty: the view's and the log's tables come in the next
-- migrations, one file each.
SELECT 1;
